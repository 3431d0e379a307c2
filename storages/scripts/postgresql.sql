-- Cacheme's table (cacheme/storages/scripts/postgresql.sql), made idempotent.
CREATE TABLE IF NOT EXISTS "cacheme_data" (
	id SERIAL NOT NULL,
	key VARCHAR(512),
	value BYTEA,
	expire TIMESTAMP WITH TIME ZONE,
	updated_at TIMESTAMP WITH TIME ZONE DEFAULT now(),
	PRIMARY KEY (id),
	UNIQUE (key)
);
CREATE INDEX IF NOT EXISTS "ix_cacheme_data_expire" ON "cacheme_data" (expire);

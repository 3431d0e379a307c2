-- Cacheme's SQLite table (cacheme/storages/scripts/sqlite.sql), made re-runnable with IF NOT
-- EXISTS. cachemed runs the same statements with the configured table name when
-- create_table = yes (index name: ix_<table>_expire). expire holds UTC text such as
-- '2026-11-25 01:22:56.123456+00:00' (NULL = never expires); updated_at is set on insert by the
-- default and, by cachemed, on every upsert.
CREATE TABLE IF NOT EXISTS cacheme_data (
	id INTEGER NOT NULL,
	"key" VARCHAR(512),
	value BLOB,
	expire DATETIME,
	updated_at DATETIME DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
	PRIMARY KEY (id),
	UNIQUE ("key")
);
CREATE INDEX IF NOT EXISTS ix_cacheme_data_expire ON cacheme_data (expire);

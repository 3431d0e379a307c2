-- Cacheme's table (cacheme/storages/scripts/mysql.sql), made idempotent.
CREATE TABLE IF NOT EXISTS `cacheme_data` (
	id INTEGER NOT NULL AUTO_INCREMENT,
	`key` VARCHAR(512),
	value BLOB,
	expire DATETIME(6),
	updated_at DATETIME(6) DEFAULT now(6),
	PRIMARY KEY (id),
	UNIQUE (`key`),
	INDEX `ix_cacheme_data_expire` (expire)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

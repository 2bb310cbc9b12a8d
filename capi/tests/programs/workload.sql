-- An SQLite workload for the LD_PRELOAD comparison (sqlite3 DB '.read ...').
PRAGMA cache_size = -4000;
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, s TEXT, v REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 150000)
INSERT INTO t(k, s, v) SELECT (x * 7919) % 1000, printf('row-%d-%s', x, hex(x * 31)), x * 0.5 FROM c;
CREATE INDEX tk ON t(k);
CREATE INDEX ts ON t(s);
SELECT count(*), sum(k), total(v) FROM t;
SELECT k, count(*), min(s), max(s) FROM t GROUP BY k ORDER BY count(*) DESC, k LIMIT 5;
SELECT a.k, count(*) FROM t a JOIN t b ON a.k = b.k AND b.id % 97 = 0 WHERE a.id % 101 = 0 GROUP BY a.k ORDER BY a.k LIMIT 5;
SELECT group_concat(s, ',') FROM (SELECT s FROM t WHERE k = 42 ORDER BY s LIMIT 20);
UPDATE t SET s = upper(s) || replace(s, '-', '_') WHERE k < 300;
DELETE FROM t WHERE k % 3 = 0;
SELECT count(*), sum(length(s)) FROM t;
SELECT s FROM t ORDER BY s DESC LIMIT 3;
VACUUM;
PRAGMA integrity_check;

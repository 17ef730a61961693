-- A telemetry database of schema 1 (otactl before decision 0205), dumped with sqlite3's iterdump.
PRAGMA user_version = 1;
BEGIN TRANSACTION;
CREATE TABLE cohort_members (
    model TEXT NOT NULL, release TEXT NOT NULL, ring TEXT NOT NULL,
    variant TEXT NOT NULL, region TEXT NOT NULL, device_id TEXT NOT NULL,
    first_at REAL NOT NULL, first_crash_at REAL,
    PRIMARY KEY (model, release, ring, variant, region, device_id)
) WITHOUT ROWID;
INSERT INTO "cohort_members" VALUES('t9-engine','2.0.0','','hp-300','eu','trk-0002',1795795200.0,1795795200.0);
INSERT INTO "cohort_members" VALUES('t9-engine','2.1.0','canary','hp-300','eu','trk-0001',1795795200.0,1795795200.0);
INSERT INTO "cohort_members" VALUES('t9-engine','2.1.0','canary','hp-300','eu','trk-0002',1795795200.0,NULL);
INSERT INTO "cohort_members" VALUES('t9-engine','2.1.0','early','hp-300','eu','trk-0001',1795802400.0,1795802400.0);
INSERT INTO "cohort_members" VALUES('t9-engine','2.1.0','early','hp-400','us','trk-0004',1795798800.0,1795798800.0);
CREATE TABLE counters (
    model TEXT NOT NULL, release TEXT NOT NULL, ring TEXT NOT NULL,
    variant TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (model, release, ring, variant, region, name)
) WITHOUT ROWID;
INSERT INTO "counters" VALUES('t9-engine','2.0.0','','hp-300','eu','crashes',4);
INSERT INTO "counters" VALUES('t9-engine','2.0.0','','hp-300','eu','crashing_devices',1);
INSERT INTO "counters" VALUES('t9-engine','2.0.0','','hp-300','eu','devices',1);
INSERT INTO "counters" VALUES('t9-engine','2.0.0','','hp-300','eu','errors',0);
INSERT INTO "counters" VALUES('t9-engine','2.0.0','','hp-300','eu','health_reports',2);
INSERT INTO "counters" VALUES('t9-engine','2.0.0','','hp-300','eu','uptime_s',93600);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','canary','hp-300','eu','crashes',4);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','canary','hp-300','eu','crashing_devices',1);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','canary','hp-300','eu','devices',2);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','canary','hp-300','eu','errors',0);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','canary','hp-300','eu','event:committed',1);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','canary','hp-300','eu','event:reverted',1);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','canary','hp-300','eu','health_reports',14);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','canary','hp-300','eu','uptime_s',100800);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-300','eu','crashes',1);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-300','eu','crashing_devices',1);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-300','eu','devices',1);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-300','eu','errors',0);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-300','eu','health_reports',1);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-300','eu','uptime_s',3600);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-400','us','crashes',2);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-400','us','crashing_devices',1);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-400','us','devices',1);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-400','us','errors',0);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-400','us','event:committed',1);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-400','us','health_reports',2);
INSERT INTO "counters" VALUES('t9-engine','2.1.0','early','hp-400','us','uptime_s',90000);
CREATE TABLE device_seq (
    device_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO "device_seq" VALUES('trk-0001',16);
INSERT INTO "device_seq" VALUES('trk-0002',3);
INSERT INTO "device_seq" VALUES('trk-0004',3);
CREATE TABLE refusals (
    reason TEXT PRIMARY KEY, count INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO "refusals" VALUES('future',1);
INSERT INTO "refusals" VALUES('replayed',1);
CREATE TABLE reports (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL, seq INTEGER NOT NULL,
    time INTEGER NOT NULL,          -- device clock, unix seconds
    received_at REAL NOT NULL,      -- ingest clock, unix seconds
    model TEXT NOT NULL, release TEXT NOT NULL, ring TEXT NOT NULL,
    variant TEXT NOT NULL, region TEXT NOT NULL,
    kind TEXT NOT NULL, event TEXT, reason TEXT,
    uptime_s INTEGER NOT NULL, crashes INTEGER NOT NULL, errors INTEGER NOT NULL,
    payload TEXT NOT NULL, signature TEXT NOT NULL,
    UNIQUE (device_id, seq)
);
INSERT INTO "reports" VALUES(1,'trk-0001',1,1795806000,1795795200.0,'t9-engine','2.1.0','canary','hp-300','eu','event','committed',NULL,0,0,0,'{"device_id":"trk-0001","event":"committed","health":null,"kind":"event","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":1,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','acc16c18e964e65cb749b0b37aec71b534a8ee5028d0993c916d4c55bbcdfeab57b1978e7020c389a224b79e890dcfc37fcae164e8e59f7e203a5cb488835301');
INSERT INTO "reports" VALUES(2,'trk-0002',1,1795806000,1795795200.0,'t9-engine','2.1.0','canary','hp-300','eu','event','reverted','boot check',0,0,0,'{"device_id":"trk-0002","event":"reverted","health":null,"kind":"event","model":"t9-engine","reason":"boot check","region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":1,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','d45ef6eefb176c7e79ad49876592e4cf483fcb75bd9fc4e42f3f6cd9c37e1310d56af4d81ea97913f737e249577412eddbe4043b52836efeca2f190c310d590a');
INSERT INTO "reports" VALUES(3,'trk-0001',2,1795806000,1795795200.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,0,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":2,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','6beb90700c69f4292b81f8f11921498adee4b5f9b68d2499fd01659d1dae8c5088012a55f61e020f2c82aae3db810dd021ce00393248824018bfacc4a5401a07');
INSERT INTO "reports" VALUES(4,'trk-0001',3,1795806000,1795795200.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,1,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":1,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":3,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','d9b002be92b7b53da117e29824947882e642b4bfa298daf085f3b8285447ff172cad3891e01e26309af5d4029926da761b2ba038e18c460002d51577ddf2d60e');
INSERT INTO "reports" VALUES(5,'trk-0001',4,1795806000,1795795200.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,0,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":4,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','aca8185575b3d6db9dc5f2decb36b05ed807e709bd8063a1ddf178cf13a71d8da0c0947316cc0a08a72182afd23cf84715ddf744a7460243b258febba9ce9b0c');
INSERT INTO "reports" VALUES(6,'trk-0001',5,1795806000,1795795200.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,1,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":1,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":5,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','f642eebc0af03aa1954729bc6bb8ba3e724b0be1d791f84989d0787ec65554606f7e34653c6df271baa6dd90c3d069f293ff8193b77c09388464375ad01fbe0b');
INSERT INTO "reports" VALUES(7,'trk-0001',6,1795806000,1795795200.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,0,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":6,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','04a6c82bcf1d6209e304bb6e7b7343a536bad8259505e9f4a6b71e35b712253b920335dc0dc3a3ed3f98e32a389143ed36fb58129a9599882ab7b1188c855a08');
INSERT INTO "reports" VALUES(8,'trk-0001',7,1795806000,1795795200.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,1,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":1,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":7,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','ca3888afd24ba9a01ca941386871eefbf85d4b1109178118f134b761f60fab8abdabe7a4d33b2823530844810f265a9a7d0d4fd5a1df4ed51d212ae48b09ab06');
INSERT INTO "reports" VALUES(9,'trk-0002',2,1795806000,1795795200.0,'t9-engine','2.0.0','','hp-300','eu','health',NULL,NULL,3600,1,0,'{"device_id":"trk-0002","event":null,"health":{"crashes":1,"errors":0,"metrics":{},"uptime_s":3600},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.0.0","ring":null,"schema":"otactl/report/1","seq":2,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','10c9b6d93103373a5d21d8bd3b5fa47d1359e2ef860427580f1a3c35b86111885229be938230099f7e27d95e1f6d1b95b697ce0301982af125962a93bd3b1d09');
INSERT INTO "reports" VALUES(10,'trk-0001',8,1795806000,1795798800.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,0,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":8,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','183dbe4aa55770aff4e50b68e152ca45c8147a2a40cf0640b6a65bc83790c13028d8c01c94226b9f7240f0b4a98d0579233c88f7e38fa358ce3df124ddefb802');
INSERT INTO "reports" VALUES(11,'trk-0001',9,1795806000,1795798800.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,0,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":9,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','95745996fd9dada9ed793e794c07ec89d5534ccff567e3b9e6836576c4e5dbf8ffe673e61d99710068b5842927eacf97c83cf5d131a3d136a1bfa43d7140f309');
INSERT INTO "reports" VALUES(12,'trk-0001',10,1795806000,1795798800.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,0,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":10,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','277fcab707202286a81f99ae13c90d68a22e7f8ada9ccc71503c1d9f137c0fe2f16d7773bbccf906934dac6ddb57d45cb7f9eb42dba24a090db2988891f64e0c');
INSERT INTO "reports" VALUES(13,'trk-0001',11,1795806000,1795798800.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,1,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":1,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":11,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','adcf8bf6cfd4e3b3e38a105687f3a7aa5972e5f5d62cbcd98e5a9a236d777488c82287e15641f9ec3444e01c233e43f1948faa171792925d8e938af5d62e320c');
INSERT INTO "reports" VALUES(14,'trk-0001',12,1795806000,1795798800.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,0,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":12,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','347416f4314c999199d1a8d7a2f320fce93dc64f4e432afc6395bc28fb1e5301dba3d6eb896e28959b190a4ed74d9596b92eb89e4dd848ed10ef58e8db027803');
INSERT INTO "reports" VALUES(15,'trk-0001',13,1795806000,1795798800.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,0,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":13,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','569c78292ad2d567b09097ba54d4b7dd6a91e3e521c94767a219bd5575f53f6406ef2c49da7b7f0000b8cddc9d858a883fb56b3d554acc59192eeae887b20c04');
INSERT INTO "reports" VALUES(16,'trk-0001',14,1795806000,1795798800.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,0,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":14,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','424cb3fa9032922f05a15992da5ad8f70e43f0a846a650581513958aa19ebcb42632666e9c6dfee907653700d8ab6a44d6b52fefce5041230db207c42aff8405');
INSERT INTO "reports" VALUES(17,'trk-0001',15,1795806000,1795798800.0,'t9-engine','2.1.0','canary','hp-300','eu','health',NULL,NULL,7200,0,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":7200},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"canary","schema":"otactl/report/1","seq":15,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','a2c037d223005738fc1a69d785ee53db77f8e362f96f593f128b72ee1bbb0ac1eb6b011c2da719ab5056c13428fd5cd001885298219e4742abd9432f6d4dca03');
INSERT INTO "reports" VALUES(18,'trk-0004',1,1795806000,1795798800.0,'t9-engine','2.1.0','early','hp-400','us','event','committed',NULL,0,0,0,'{"device_id":"trk-0004","event":"committed","health":null,"kind":"event","model":"t9-engine","reason":null,"region":"us","release":"2.1.0","ring":"early","schema":"otactl/report/1","seq":1,"time":"2026-11-27T19:00:00Z","variant":"hp-400"}','fd6dbfd36be71b0df3dfb1faea71c9a62115108aeaf4784602421e371ded3984861dc1612e909d5fd27578896289aa893e7040f14168ca4825f9df72f7afbf0b');
INSERT INTO "reports" VALUES(19,'trk-0004',2,1795806000,1795798800.0,'t9-engine','2.1.0','early','hp-400','us','health',NULL,NULL,50000,2,0,'{"device_id":"trk-0004","event":null,"health":{"crashes":2,"errors":0,"metrics":{},"uptime_s":50000},"kind":"health","model":"t9-engine","reason":null,"region":"us","release":"2.1.0","ring":"early","schema":"otactl/report/1","seq":2,"time":"2026-11-27T19:00:00Z","variant":"hp-400"}','b907cc7fb5909773a5bd1a64fa35409e6d743be4f3996e4318338834c98be9cc28836868d1eaaed65d4049999ec4f8c6ee9f0cfdbf7459146318e710a419640f');
INSERT INTO "reports" VALUES(20,'trk-0001',16,1795806000,1795802400.0,'t9-engine','2.1.0','early','hp-300','eu','health',NULL,NULL,3600,1,0,'{"device_id":"trk-0001","event":null,"health":{"crashes":1,"errors":0,"metrics":{},"uptime_s":3600},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.1.0","ring":"early","schema":"otactl/report/1","seq":16,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','75a4bbcdd2f4279323a476838e761cba285edef82afcf76ee771ac89e87b8f3390ef7f34344df7354672cdfcccd4d5942b9afbc930ed00c2314f6b718930b00e');
INSERT INTO "reports" VALUES(21,'trk-0004',3,1795806000,1795802400.0,'t9-engine','2.1.0','early','hp-400','us','health',NULL,NULL,40000,0,0,'{"device_id":"trk-0004","event":null,"health":{"crashes":0,"errors":0,"metrics":{},"uptime_s":40000},"kind":"health","model":"t9-engine","reason":null,"region":"us","release":"2.1.0","ring":"early","schema":"otactl/report/1","seq":3,"time":"2026-11-27T19:00:00Z","variant":"hp-400"}','39aa1606d17b2eb22efb523bcc6154165a9f83d54c9402ad1672f0df45e169fd79b3b9ebe55bbf506db9a8a0916d85a098262da969d4155534ec340e11ce2d00');
INSERT INTO "reports" VALUES(22,'trk-0002',3,1795806000,1795802400.0,'t9-engine','2.0.0','','hp-300','eu','health',NULL,NULL,90000,3,0,'{"device_id":"trk-0002","event":null,"health":{"crashes":3,"errors":0,"metrics":{},"uptime_s":90000},"kind":"health","model":"t9-engine","reason":null,"region":"eu","release":"2.0.0","ring":null,"schema":"otactl/report/1","seq":3,"time":"2026-11-27T19:00:00Z","variant":"hp-300"}','df0189953c58cb55287759d0d5d230ef24a8102b5fae3bab4783e1164883f0c4437869590723f1a46b329f595013ed94a075db8035b7cb85da480b97d2e3ea08');
CREATE INDEX reports_by_cohort ON reports (model, release, received_at);
CREATE TRIGGER cohort_member_joined AFTER INSERT ON cohort_members BEGIN
    INSERT INTO counters(model, release, ring, variant, region, name, value) SELECT NEW.model, NEW.release, NEW.ring, NEW.variant, NEW.region, 'devices', 1 WHERE 1 ON CONFLICT DO UPDATE SET value = value + excluded.value;
    INSERT INTO counters(model, release, ring, variant, region, name, value) SELECT NEW.model, NEW.release, NEW.ring, NEW.variant, NEW.region, 'crashing_devices', 1 WHERE NEW.first_crash_at IS NOT NULL ON CONFLICT DO UPDATE SET value = value + excluded.value;
END;
CREATE TRIGGER cohort_member_crashed AFTER UPDATE OF first_crash_at ON cohort_members
WHEN OLD.first_crash_at IS NULL AND NEW.first_crash_at IS NOT NULL BEGIN
    INSERT INTO counters(model, release, ring, variant, region, name, value) SELECT NEW.model, NEW.release, NEW.ring, NEW.variant, NEW.region, 'crashing_devices', 1 WHERE 1 ON CONFLICT DO UPDATE SET value = value + excluded.value;
END;
COMMIT;

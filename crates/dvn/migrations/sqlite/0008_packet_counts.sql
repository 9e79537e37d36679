-- Packets per state, kept by triggers in the same transaction as every insert, state change
-- and delete: the health snapshot reads eight rows instead of counting the whole history
-- every 5 s (56 ms at 1,000,000 stored packets, growing with it).
CREATE TABLE packet_counts (
    state TEXT PRIMARY KEY,
    n     BIGINT NOT NULL
);
INSERT INTO packet_counts (state, n) VALUES
    ('observed', 0), ('signed', 0), ('submitted', 0), ('verified', 0),
    ('skipped', 0), ('orphaned', 0), ('invalid', 0), ('conflict', 0);
UPDATE packet_counts SET n = (SELECT COUNT(*) FROM packets WHERE packets.state = packet_counts.state);

CREATE TRIGGER packet_counts_insert AFTER INSERT ON packets BEGIN
    UPDATE packet_counts SET n = n + 1 WHERE state = NEW.state;
END;

CREATE TRIGGER packet_counts_delete AFTER DELETE ON packets BEGIN
    UPDATE packet_counts SET n = n - 1 WHERE state = OLD.state;
END;

CREATE TRIGGER packet_counts_update AFTER UPDATE OF state ON packets
WHEN OLD.state <> NEW.state BEGIN
    UPDATE packet_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE packet_counts SET n = n + 1 WHERE state = NEW.state;
END;

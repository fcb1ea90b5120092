-- The oldest release that can run on this schema, named by the highest migration such a
-- release must know. A release whose schema changes leave an older one unable to work
-- raises it in its own migration (UPDATE schema_compatibility SET min_reader_migration
-- = <its previous release's last migration>); opening refuses a schema whose floor is
-- above the migrations the opening release knows, instead of running on a schema it
-- cannot read. Releases without this table (up to migration 0008) ignore it; 0008's
-- schema is still readable by a release that knows 0007 (the rolling-upgrade test).
CREATE TABLE schema_compatibility (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    min_reader_migration BIGINT NOT NULL
);
INSERT INTO schema_compatibility (id, min_reader_migration) VALUES (1, 7);

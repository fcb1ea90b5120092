-- Why: an operator's retry from an earlier step puts the context back as it was when
-- that step was entered. Each step commit stores what its changes to the context
-- replaced, under the execution's new version (docs/execution-semantics.md, "The
-- context's undo trail"). A table of its own: existing tables gain no column (the
-- previous release reads whole rows), and no foreign key, so creating it takes no lock
-- on `executions`; retention deletes its rows with their execution's.
CREATE TABLE IF NOT EXISTS context_trail (
    execution_id  uuid NOT NULL,
    version       bigint NOT NULL,
    undo          jsonb NOT NULL,
    PRIMARY KEY (execution_id, version)
);

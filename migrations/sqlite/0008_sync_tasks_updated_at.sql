-- The gateway shows agents the Salesforce sync status of their calls by
-- reading the Task rows the connector changed since its last look.
-- Keep in step with the other dialect.
CREATE INDEX sync_tasks_updated_at ON sync_tasks (updated_at);

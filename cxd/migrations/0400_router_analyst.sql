-- Query router: the SELECT-only role analysts' SQL runs as (invariant 5).
-- Roles are cluster-wide, so creating one must tolerate another database having done it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cxd_analyst') THEN
        CREATE ROLE cxd_analyst NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

-- The engine's own role must be able to SET ROLE cxd_analyst.
DO $$
BEGIN
    EXECUTE format('GRANT cxd_analyst TO %I', current_user);
EXCEPTION WHEN others THEN
    RAISE NOTICE 'cxd: could not grant cxd_analyst to %: %', current_user, SQLERRM;
END $$;

GRANT USAGE ON SCHEMA raw TO cxd_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA raw TO cxd_analyst;
-- Raw tables created later by this role are readable too.
ALTER DEFAULT PRIVILEGES IN SCHEMA raw GRANT SELECT ON TABLES TO cxd_analyst;

-- Functions every role may call by default but analysts must not: sleeping, settings,
-- locks, notifications, server and backend information, server files and large objects.
-- Taken from PUBLIC and given back to the engine's own role; a database owner that is
-- not a superuser cannot do this, and then the SQL allow-list stands alone.
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog' AND (
            p.proname IN ('pg_sleep', 'pg_sleep_for', 'pg_sleep_until', 'set_config',
                'current_setting', 'pg_notify', 'txid_current', 'txid_current_if_assigned',
                'pg_current_xact_id', 'pg_current_xact_id_if_assigned', 'version',
                'pg_backend_pid', 'inet_server_addr', 'inet_server_port',
                'inet_client_addr', 'inet_client_port', 'pg_cancel_backend',
                'pg_terminate_backend', 'pg_postmaster_start_time', 'pg_conf_load_time',
                'pg_listening_channels', 'pg_notification_queue_usage',
                'pg_stat_file', 'pg_read_file', 'pg_read_binary_file', 'pg_ls_dir',
                'pg_tablespace_location', 'pg_get_userbyid', 'pg_describe_object',
                'query_to_xml', 'query_to_xml_and_xmlschema', 'query_to_xmlschema',
                'table_to_xml', 'table_to_xml_and_xmlschema', 'cursor_to_xml',
                'schema_to_xml', 'database_to_xml', 'pg_import_system_collations',
                'pg_log_backend_memory_contexts', 'pg_relation_filepath',
                'pg_get_keywords', 'pg_get_functiondef', 'pg_get_viewdef')
            OR p.proname LIKE 'pg\_advisory%'
            OR p.proname LIKE 'pg\_try\_advisory%'
            OR p.proname LIKE 'lo\_%'
            OR p.proname IN ('loread', 'lowrite')
        )
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, current_user);
    END LOOP;
    -- DO blocks could RESET ROLE; analysts get no procedural language.
    REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC;
    EXECUTE format('GRANT USAGE ON LANGUAGE plpgsql TO %I', current_user);
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cxd: not a superuser; analysts keep PUBLIC function grants: %', SQLERRM;
END $$;

-- PBX settings name their AMI transport (domain/settings.rs `AmiTransport`); settings saved
-- before it say only whether TLS was on.
UPDATE pbx_settings
   SET settings = settings || jsonb_build_object(
         'transport', CASE WHEN (settings ->> 'tls')::boolean THEN 'tls' ELSE 'tcp' END)
 WHERE NOT settings ? 'transport';

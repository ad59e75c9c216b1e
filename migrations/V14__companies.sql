-- Companies as the operator manages them (domain/company.rs): a name, whether the company may act
-- (a suspended one's requests are refused), and who issues its tokens. A company created by its
-- first admin write, as before, has no name and no issuer: its tokens are verified with the
-- deployment's own keys until the operator gives it an issuer (issuers.global_keys).
ALTER TABLE tenants
    ADD COLUMN name text,
    ADD COLUMN state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'suspended')),
    -- {"iss", "jwks_url" | "public_keys", "ca_pem"?, "hs256"}: domain::company::Issuer.
    ADD COLUMN issuer jsonb,
    -- The company's own HS256 secret, encrypted with the secrets key (crypto.rs), when it has one.
    ADD COLUMN hs256_secret_enc text,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Revoked relay tokens (docs/security.md, "Tokens"): every relay token carries a `jti`; `relay-core
-- token revoke` (the revoke-token function, service role) records one here, and every function a relay
-- calls refuses a token whose jti is listed (401 token_revoked). The relay's other tokens keep working
-- (a ban stops them all).
create table relaynet.revoked_tokens (
  jti uuid primary key,
  reason text not null default '' check (length(reason) <= 200),
  revoked_at timestamptz not null default clock_timestamp()
);

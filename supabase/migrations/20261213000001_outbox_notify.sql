-- The topology publisher (src/control-plane/topology-publisher.ts) reads the outbox every 100 ms. On a
-- PostgreSQL where it may LISTEN, a transaction that appends topology events notifies it when it
-- commits, so the events go out at once (the read every second remains, as a safety net). No payload:
-- the publisher reads whatever is past its cursor. Without a listener a notification costs nothing.
create function relaynet.notify_outbox() returns trigger
language plpgsql as $$
begin
  perform pg_notify('relaynet_outbox', '');
  return null;
end;
$$;

create trigger topology_events_notify
  after insert on relaynet.topology_events
  for each statement execute function relaynet.notify_outbox();

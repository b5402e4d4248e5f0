"""Dossier events below the roles: what the ingest edge and the indicators' Kafka consumer both do with
them. ``checks``: an incoming item validated as a canonical event (``shared.events``) with its reason if
not; ``ownership``: who may add events to a dossier; ``store``: events stored idempotently, and dead
letters."""

"""The core: hook specifications, plugin host, settings, domain types, storage."""

"""mailhub: a complete mail system inside a Django site."""

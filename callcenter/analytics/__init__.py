"""Call analytics: talk time, silence, overlap, interruptions, talk speed and
sentiment per party, computed when a call ends; category rules matched on
finals and raised live as alerts (docs/call-analytics.md)."""

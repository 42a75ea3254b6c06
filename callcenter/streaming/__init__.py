"""Live calls over websockets: media protocols, endpointing, partial
hypotheses, the agents' feed."""

"""The agent page: live calls and live transcripts in the browser."""

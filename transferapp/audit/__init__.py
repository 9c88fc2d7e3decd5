"""The append-only audit trail (#26): who did what, in a hash chain that shows any later change."""

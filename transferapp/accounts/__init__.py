"""Who may do what: sign-in and its throttle, quotas, API keys."""

"""The worker side: rq tasks (thin), tries and progress, the reaper and its rules, sweeps."""

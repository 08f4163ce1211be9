# The audit trail of everything the demo ran.
csops runs --last 30 --table

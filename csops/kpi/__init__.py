"""Daily KPIs: definitions, storage, report and alerts."""

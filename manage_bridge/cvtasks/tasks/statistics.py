"""Statistics tasks (queue ``statistics_queue``)."""
from ._proxy import proxy


@proxy
def generate_daily_stats(date=None):
    """Aggregate one day (yesterday by default) into DailyStatistics."""


@proxy
def generate_weekly_report(week_start=None):
    """Aggregate a week into a WeeklyReport and mail it to ADMINS."""

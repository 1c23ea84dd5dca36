"""The page blueprints."""

from __future__ import annotations

from web.views import jobs, report, scans

BLUEPRINTS = (jobs.bp, report.bp, scans.bp)

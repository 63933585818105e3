"""Schedules, sensors and alerts."""

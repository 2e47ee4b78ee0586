"""Energy cost: tariffs, pricing, schedules, live cost and reports."""

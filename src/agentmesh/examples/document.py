"""The built-in document the demo briefs."""

from __future__ import annotations

_SAMPLE = """\
# Riverside Community Solar: Year One Review

## Overview
The Riverside community solar project finished its first full year of operation in March.
The array on the old depot roof produced 1.9 gigawatt hours, which is close to the forecast.
Two hundred and forty households now buy their electricity from the cooperative.
Members praised the clear monthly statements and the simple sign-up process.

## Production
Solar production grew every quarter as the second inverter bank came online.
Summer output exceeded the forecast by eight percent, a record for the region.
Winter production was weak because snow covered the panels for eleven days.
The maintenance crew now clears the panels within a day of heavy snow.

## Finances
The cooperative paid its members a dividend for the first time, ahead of plan.
Savings on household bills averaged twelve percent compared with the utility tariff.
Insurance premiums rose sharply, and the storage battery was more expensive than budgeted.
The board expects the battery loan to be repaid within six years.

## Reliability
Two inverter outages in June caused a loss of nine days of production.
The supplier replaced the faulty units under warranty, without cost to the cooperative.
Since then the array has run without a single outage.
Remote monitoring now alerts the crew within minutes of any problem.

## Community
Volunteers led forty school visits, and the local college uses the array for training.
Residents welcomed the new bicycle shelter built under the panels.
A few neighbours complained about glare from the south row during autumn mornings.
The cooperative installed screens, and no complaints have been received since.

## Next Steps
The board proposes a second array on the library roof for next spring.
Members will vote on the plan at the annual meeting in June.
Grid connection delays remain the main risk, so the board asked the utility for an early date.
If the vote succeeds, construction could start within four months.
"""


def sample_document() -> str:
    """A six-section report, the demo's default input."""
    return _SAMPLE

"""Counters stored per month: a quarter or a year is the sum of its months plus its own row, which keeps
only the corrections of dossiers still open (services/indicators/rules/counters.py: CounterDelta).

Each quarter and year row becomes its old value minus the sum of its months' rows; the rows that become
zero (every finished dossier's counts) are deleted. What each period reads is unchanged.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The month keys of a quarter ('2026-Q3') or a year ('2026') row p, as a SQL expression.
_MONTHS_OF = """
    CASE WHEN {p} ~ '^[0-9]{{4}}-Q[1-4]$' THEN ARRAY(
             SELECT left({p}, 4) || '-' || lpad((3 * (right({p}, 1)::int - 1) + g)::text, 2, '0')
             FROM generate_series(1, 3) AS g)
         ELSE ARRAY(SELECT {p} || '-' || lpad(g::text, 2, '0') FROM generate_series(1, 12) AS g)
    END"""


def _convert(sign: str) -> None:
    op.execute(f"""
        WITH wide AS (
            SELECT w.unit_code, w.period, w.procedure_code, w.metric,
                   (SELECT coalesce(sum(m.value), 0) FROM counters m
                    WHERE m.unit_code = w.unit_code AND m.procedure_code = w.procedure_code
                      AND m.metric = w.metric AND m.period = ANY(months.keys)) AS months_sum
            FROM counters w, LATERAL (SELECT {_MONTHS_OF.format(p='w.period')} AS keys) AS months
            WHERE w.period !~ '^[0-9]{{4}}-[0-9]{{2}}$'
        )
        UPDATE counters c SET value = c.value {sign} wide.months_sum
        FROM wide
        WHERE c.unit_code = wide.unit_code AND c.period = wide.period
          AND c.procedure_code = wide.procedure_code AND c.metric = wide.metric
    """)


def _create_missing_wide_rows() -> None:
    """A zero quarter and year row beside every month row that has none: a period whose own value is zero
    (every month's open dossier overdue by its end, say) kept no row, yet its correction is not zero."""
    op.execute("""
        INSERT INTO counters (unit_code, period, procedure_code, metric, value)
        SELECT DISTINCT m.unit_code, wide.p, m.procedure_code, m.metric, 0
        FROM counters m, LATERAL (VALUES (left(m.period, 4)),
                                         (left(m.period, 4) || '-Q' || ((substring(m.period, 6, 2)::int - 1) / 3 + 1)))
                         AS wide(p)
        WHERE m.period ~ '^[0-9]{4}-[0-9]{2}$'
        ON CONFLICT DO NOTHING
    """)


def upgrade() -> None:
    _create_missing_wide_rows()
    _convert("-")
    op.execute("DELETE FROM counters WHERE value = 0 AND period !~ '^[0-9]{4}-[0-9]{2}$'")


def downgrade() -> None:
    _create_missing_wide_rows()  # a period with no correction row still reads its months' sum
    _convert("+")

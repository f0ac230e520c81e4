-- Cost control (docs/cost-control.md): each model call's cost, each tenant's monthly spend, budgets, alerts.

-- The call's cost in US dollars at the list price of its model when it was recorded (BOTLOOM_MODEL_PRICES);
-- NULL: the model has no price (or the call was recorded before this migration).
ALTER TABLE usage_events ADD COLUMN cost_usd numeric;
CREATE INDEX usage_events_tenant_bot ON usage_events (tenant_id, bot_id, created_at);

-- What a tenant's model calls cost in one calendar month (UTC): added to by the statement that records each
-- priced call (repositories/usage.py), so every process reads the same running total.
CREATE TABLE tenant_spend (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month date NOT NULL CHECK (extract(day FROM month) = 1),
    cost_usd numeric NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    PRIMARY KEY (tenant_id, month)
);

-- A tenant's monthly budget, set by the operator.
CREATE TABLE tenant_budgets (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    monthly_usd numeric NOT NULL CHECK (monthly_usd > 0),
    alert_at double precision[] NOT NULL DEFAULT '{}',
    on_exhausted text NOT NULL CHECK (on_exhausted IN ('offline', 'handover', 'refuse')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Each alert (a fraction of the budget reached) and each exhaustion of a month: the primary key lets exactly one
-- process claim it, whichever processes see the threshold crossed; the winner emits the event.
CREATE TABLE budget_alerts (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month date NOT NULL,
    kind text NOT NULL CHECK (kind IN ('alert', 'exhausted')),
    threshold_usd numeric NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, month, kind, threshold_usd)
);

-- The agent desk (docs/desk.md): a tenant's agents, the handovers of conversations to them with every
-- transition audited, private notes, canned responses and teams with business hours.
--
-- A handover moves waiting -> assigned -> with_agent -> resolved | returned_to_bot | timed_out_to_bot
-- (assigned and with_agent may be skipped: an agent claims a waiting handover straight to with_agent).
-- At most one handover of a conversation is open (waiting, assigned, with_agent) at a time.

CREATE TABLE agents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    password_hash text NOT NULL,
    token_prefix text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    teams text[] NOT NULL DEFAULT '{}',
    skills text[] NOT NULL DEFAULT '{}',
    capacity integer NOT NULL DEFAULT 5 CHECK (capacity BETWEEN 1 AND 100),
    presence text NOT NULL DEFAULT 'away' CHECK (presence IN ('available', 'away')),
    last_seen_at timestamptz,
    last_assigned_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX agents_email ON agents (tenant_id, lower(email));

CREATE TABLE desk_teams (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    timezone text NOT NULL DEFAULT 'UTC',
    -- {"mon": [["09:00", "17:00"]], ...}; a day not named is closed; an empty object: always open
    hours jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE handovers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    bot_id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    team text,
    status text NOT NULL DEFAULT 'waiting' CHECK (
        status IN ('waiting', 'assigned', 'with_agent', 'resolved', 'returned_to_bot', 'timed_out_to_bot')
    ),
    reason text NOT NULL,
    summary jsonb NOT NULL DEFAULT '{}',
    agent_id uuid,
    note text,
    created_at timestamptz NOT NULL DEFAULT now(),
    assigned_at timestamptz,
    first_response_at timestamptz,
    closed_at timestamptz,
    wait_until timestamptz,
    first_response_due timestamptz,
    resolution_due timestamptz,
    first_response_alerted boolean NOT NULL DEFAULT false,
    resolution_alerted boolean NOT NULL DEFAULT false,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, bot_id) REFERENCES bots (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE SET NULL (agent_id)
);
CREATE UNIQUE INDEX handovers_open ON handovers (conversation_id)
    WHERE status IN ('waiting', 'assigned', 'with_agent');
CREATE INDEX handovers_queue ON handovers (tenant_id, status, created_at);
CREATE INDEX handovers_agent ON handovers (agent_id) WHERE status IN ('assigned', 'with_agent');

CREATE TABLE handover_transitions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL,
    handover_id uuid NOT NULL,
    from_status text,
    to_status text NOT NULL,
    agent_id uuid,
    detail jsonb NOT NULL DEFAULT '{}',
    at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, handover_id) REFERENCES handovers (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX handover_transitions_handover ON handover_transitions (handover_id, id);

CREATE TABLE handover_notes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL,
    handover_id uuid NOT NULL,
    agent_id uuid,
    text text NOT NULL CHECK (length(text) BETWEEN 1 AND 10000),
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, handover_id) REFERENCES handovers (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE SET NULL (agent_id)
);
CREATE INDEX handover_notes_handover ON handover_notes (handover_id, created_at);

CREATE TABLE canned_responses (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    team text NOT NULL DEFAULT '',
    shortcut text NOT NULL CHECK (length(shortcut) BETWEEN 1 AND 64),
    text text NOT NULL CHECK (length(text) BETWEEN 1 AND 5000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, team, shortcut)
);

-- Sign-ins of the desk page (e-mail and password): tokens that expire, beside each agent's personal token.
CREATE TABLE agent_sessions (
    token_hash bytea PRIMARY KEY,
    tenant_id uuid NOT NULL,
    agent_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_sessions_agent ON agent_sessions (agent_id);

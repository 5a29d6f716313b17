-- pouch_reserve: a reservation on PostgreSQL in one round trip (pouch/store/ledger.py reserve).
-- The same steps, in the same order, as the Python path SQLite runs: the limits (in flight,
-- then the minute's requests and tokens), the levels (the gateway's ceiling, the team, the end
-- user), the key's budget, the hold. A refusal anywhere raises inside the inner block, which
-- undoes everything taken before it, and comes back as JSON; so does an admission.
CREATE OR REPLACE FUNCTION pouch_reserve(
    p_id text, p_key_id integer, p_start timestamp, p_end timestamp, p_amount bigint,
    p_created timestamp, p_deadline timestamp, p_owner text, p_provider text, p_model text,
    p_endpoint text, p_levels jsonb, p_limits jsonb, p_tokens bigint, p_clock double precision,
    p_mock boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    i integer;
    cap integer;
    rpm integer;
    tpm integer;
    counted bigint;
    n bigint;
    used bigint;
    scope text;
    budget bigint;
    spent bigint;
    reserved bigint;
    row_id integer;
    held text := NULL;
    slots text := NULL;
    lefts jsonb := '[]'::jsonb;
    rate jsonb := NULL;
    result jsonb;
BEGIN
    BEGIN
        i := 0;
        FOR item IN SELECT value FROM jsonb_array_elements(p_limits) LOOP
            scope := item->>'scope';
            cap := (item->>'max_concurrent')::integer;
            rpm := (item->>'rpm')::integer;
            tpm := (item->>'tpm')::integer;
            UPDATE pouch_limit_state SET in_flight = in_flight + 1
                WHERE pouch_limit_state.scope = item->>'scope' AND (cap IS NULL OR in_flight < cap);
            IF NOT FOUND THEN
                INSERT INTO pouch_limit_state (scope, in_flight) VALUES (item->>'scope', 0)
                    ON CONFLICT DO NOTHING;
                UPDATE pouch_limit_state SET in_flight = in_flight + 1
                    WHERE pouch_limit_state.scope = item->>'scope' AND (cap IS NULL OR in_flight < cap);
                IF NOT FOUND THEN
                    RAISE EXCEPTION USING ERRCODE = 'PX001',
                        MESSAGE = jsonb_build_object('rate', i, 'why', 'concurrent')::text;
                END IF;
            END IF;
            IF rpm IS NOT NULL OR tpm IS NOT NULL THEN
                SELECT COUNT(*), COALESCE(SUM(tokens), 0) INTO n, used FROM pouch_rate_log
                    WHERE pouch_rate_log.scope = item->>'scope' AND at > p_clock - 60;
                IF rpm IS NOT NULL AND n + 1 > rpm THEN
                    RAISE EXCEPTION USING ERRCODE = 'PX001', MESSAGE = jsonb_build_object('rate', i, 'why', 'rpm')::text;
                END IF;
                IF tpm IS NOT NULL AND p_tokens > tpm THEN
                    RAISE EXCEPTION USING ERRCODE = 'PX001',
                        MESSAGE = jsonb_build_object('rate', i, 'why', 'tpm_never')::text;
                END IF;
                IF tpm IS NOT NULL AND used + p_tokens > tpm THEN
                    RAISE EXCEPTION USING ERRCODE = 'PX001', MESSAGE = jsonb_build_object('rate', i, 'why', 'tpm')::text;
                END IF;
                counted := CASE WHEN tpm IS NULL THEN 0 ELSE p_tokens END;
                INSERT INTO pouch_rate_log (scope, at, tokens, reservation_id)
                    VALUES (item->>'scope', p_clock, counted, p_id);
                IF rate IS NULL THEN
                    rate := jsonb_build_array(i, n + 1, used + counted);
                END IF;
            END IF;
            slots := concat_ws(E'\n', slots, item->>'scope');
            i := i + 1;
        END LOOP;

        i := 0;
        FOR item IN SELECT value FROM jsonb_array_elements(p_levels) LOOP
            budget := CASE item->>'from'
                WHEN 'team' THEN (SELECT budget_pico FROM pouch_teams WHERE id = (item->>'row')::integer)
                WHEN 'user' THEN (SELECT user_budget_pico FROM pouch_keys WHERE id = (item->>'row')::integer)
                ELSE (item->>'budget')::bigint END;
            UPDATE pouch_budget_ledger SET reserved_pico = reserved_pico + p_amount
                WHERE pouch_budget_ledger.scope = item->>'scope' AND window_start = (item->>'start')::timestamp
                  AND (budget IS NULL OR spent_pico + reserved_pico + p_amount <= budget)
                RETURNING id, spent_pico, reserved_pico INTO row_id, spent, reserved;
            IF NOT FOUND THEN
                INSERT INTO pouch_budget_ledger (scope, window_start, window_end, spent_pico, reserved_pico)
                    VALUES (item->>'scope', (item->>'start')::timestamp, (item->>'end')::timestamp, 0, 0)
                    ON CONFLICT DO NOTHING;
                UPDATE pouch_budget_ledger SET reserved_pico = reserved_pico + p_amount
                    WHERE pouch_budget_ledger.scope = item->>'scope' AND window_start = (item->>'start')::timestamp
                      AND (budget IS NULL OR spent_pico + reserved_pico + p_amount <= budget)
                    RETURNING id, spent_pico, reserved_pico INTO row_id, spent, reserved;
                IF NOT FOUND THEN
                    SELECT spent_pico, reserved_pico INTO spent, reserved FROM pouch_budget_ledger
                        WHERE pouch_budget_ledger.scope = item->>'scope'
                          AND window_start = (item->>'start')::timestamp;
                    RAISE EXCEPTION USING ERRCODE = 'PX001', MESSAGE = jsonb_build_object(
                        'level', i, 'budget', budget, 'spent', spent, 'reserved', reserved)::text;
                END IF;
            END IF;
            held := concat_ws(',', held, row_id::text);
            lefts := lefts || to_jsonb(budget - spent - reserved);
            i := i + 1;
        END LOOP;

        budget := (SELECT budget_pico FROM pouch_keys WHERE id = p_key_id);
        UPDATE pouch_ledger SET reserved_pico = reserved_pico + p_amount
            WHERE key_id = p_key_id AND window_start = p_start
              AND (budget IS NULL OR spent_pico + reserved_pico + p_amount <= budget)
            RETURNING id, spent_pico, reserved_pico INTO row_id, spent, reserved;
        IF NOT FOUND THEN
            INSERT INTO pouch_ledger (key_id, window_start, window_end, spent_pico, reserved_pico)
                VALUES (p_key_id, p_start, p_end, 0, 0) ON CONFLICT DO NOTHING;
            UPDATE pouch_ledger SET reserved_pico = reserved_pico + p_amount
                WHERE key_id = p_key_id AND window_start = p_start
                  AND (budget IS NULL OR spent_pico + reserved_pico + p_amount <= budget)
                RETURNING id, spent_pico, reserved_pico INTO row_id, spent, reserved;
            IF NOT FOUND THEN
                SELECT spent_pico, reserved_pico INTO spent, reserved FROM pouch_ledger
                    WHERE key_id = p_key_id AND window_start = p_start;
                RAISE EXCEPTION USING ERRCODE = 'PX001', MESSAGE = jsonb_build_object(
                    'level', NULL, 'budget', budget, 'spent', spent, 'reserved', reserved)::text;
            END IF;
        END IF;
        INSERT INTO pouch_reservations (id, key_id, ledger_id, amount_pico, created_at, deadline, owner,
                                        provider, model, endpoint, mock, scopes, slots)
            VALUES (p_id, p_key_id, row_id, p_amount, p_created, p_deadline, p_owner,
                    p_provider, p_model, p_endpoint, p_mock, held, slots);
        result := jsonb_build_object('left', budget - spent - reserved, 'lefts', lefts, 'rate', rate);
    EXCEPTION WHEN SQLSTATE 'PX001' THEN
        result := jsonb_build_object('refused', SQLERRM::jsonb);
    END;
    RETURN result;
END
$$

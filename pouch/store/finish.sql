-- pouch_finish: a settlement on PostgreSQL in one call (pouch/store/ledger.py finish).
-- The same steps, in the same lock order, as the Python path: the reservation is deleted (only
-- the first close finds it), its slots in flight given back and its tokens/min settled, each
-- budget level and then the key's ledger charged, the usage row written. The caller runs it in
-- a transaction, with the alerts' outbox rows the answer calls for (pouch.alerts.outbox).
CREATE OR REPLACE FUNCTION pouch_finish(p_id text, p_cost bigint, p_row jsonb, p_tokens bigint)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_ledger integer;
    v_amount bigint;
    v_scopes text;
    v_slots text;
    v_scope text;
    v_level text;
    v_spent bigint;
    v_budget bigint;
    v_alert_at text;
    v_columns text;
BEGIN
    DELETE FROM pouch_reservations WHERE id = p_id RETURNING ledger_id, amount_pico, scopes, slots
        INTO v_ledger, v_amount, v_scopes, v_slots;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('done', false);
    END IF;
    IF v_slots IS NOT NULL THEN
        FOREACH v_scope IN ARRAY string_to_array(v_slots, E'\n') LOOP
            UPDATE pouch_limit_state SET in_flight = in_flight - 1 WHERE scope = v_scope AND in_flight > 0;
        END LOOP;
        IF p_tokens IS NOT NULL THEN
            UPDATE pouch_rate_log SET tokens = p_tokens WHERE reservation_id = p_id;
        END IF;
    END IF;
    IF v_scopes IS NOT NULL THEN
        FOREACH v_level IN ARRAY string_to_array(v_scopes, ',') LOOP
            UPDATE pouch_budget_ledger SET reserved_pico = reserved_pico - v_amount, spent_pico = spent_pico + p_cost
                WHERE id = v_level::integer;
        END LOOP;
    END IF;
    UPDATE pouch_ledger SET reserved_pico = reserved_pico - v_amount, spent_pico = spent_pico + p_cost
        WHERE id = v_ledger RETURNING spent_pico INTO v_spent;
    SELECT budget_pico, alert_at INTO v_budget, v_alert_at FROM pouch_keys
        WHERE id = (SELECT key_id FROM pouch_ledger WHERE id = v_ledger);
    SELECT string_agg(quote_ident(name), ', ') INTO v_columns FROM jsonb_object_keys(p_row) AS name;
    -- (no format() here: psycopg2 would read its placeholders as parameters when the migration runs)
    EXECUTE 'INSERT INTO pouch_usage (' || v_columns || ') SELECT ' || v_columns
            || ' FROM jsonb_populate_record(NULL::pouch_usage, $1)' USING p_row;
    RETURN jsonb_build_object('done', true, 'ledger', v_ledger, 'spent', v_spent, 'budget', v_budget,
                              'alert_at', v_alert_at);
END
$$

//! The one diesel schema for both backends, kept by hand: `BigInt` ids, naive-UTC
//! `Timestamp`s and `Binary` hashes behave the same on SQLite and Postgres.

diesel::table! {
    users (id) {
        id -> BigInt,
        email -> Text,
        password_hash -> Text,
        is_admin -> Bool,
        disabled -> Bool,
        created_at -> Timestamp,
        password_changed_at -> Timestamp,
        last_login_at -> Nullable<Timestamp>,
        last_reset_at -> Nullable<Timestamp>,
        credential_generation -> BigInt,
    }
}

diesel::table! {
    reset_requests (id) {
        id -> BigInt,
        email -> Text,
        client_ip -> Text,
        user_agent -> Text,
        created_at -> Timestamp,
        actor_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    reset_tokens (id) {
        id -> BigInt,
        user_id -> BigInt,
        token_hash -> Binary,
        sent_to -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        openings -> BigInt,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        kind -> Text,
        recipient -> Text,
        payload -> Binary,
        status -> Text,
        attempts -> BigInt,
        next_attempt_at -> Timestamp,
        locked_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
        expires_at -> Nullable<Timestamp>,
        user_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    sessions (id) {
        id -> BigInt,
        key_hash -> Binary,
        user_id -> Nullable<BigInt>,
        public_id -> Nullable<Text>,
        state -> Text,
        client_ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        credential_generation -> Nullable<BigInt>,
    }
}

diesel::table! {
    events (id) {
        id -> BigInt,
        kind -> Text,
        user_id -> Nullable<BigInt>,
        actor_id -> Nullable<BigInt>,
        email -> Nullable<Text>,
        detail -> Nullable<Text>,
        client_ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    rate_limits (bucket, window_no) {
        bucket -> Text,
        window_no -> BigInt,
        hits -> BigInt,
        prev_hits -> BigInt,
        expires_at -> Timestamp,
    }
}

diesel::joinable!(reset_tokens -> users (user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    reset_requests,
    reset_tokens,
    outbox,
    sessions,
    events,
    rate_limits
);

//! The contract's conformance suite: each behaviour of [`kathikon_core::Jobs`] is one body,
//! run against every implementation (see [`harness`]): `engine::NAME` against the in-process
//! engine, `socket::NAME` against a client of an owner serving the store on its socket.
//!
//! - [`model`]: random runs against a reference model of the state machine (proptest);
//! - [`outcomes`]: what each ack outcome, retry, cancel and prune does to stored jobs;
//! - [`claims`]: claim order, waiting, interrupts, and claimers racing each other and cancels;
//! - [`counts`]: the stored counts, `oldest_available` and `sync_promoting`;
//! - [`reads`]: `list`'s filters and paging, unknown ids;
//! - [`listing`]: `list`'s full filter in both orders, `count`, bulk actions in chunks;
//! - [`claimers`]: which queues running processes claim from;
//! - [`ready`]: one waiter watching many queues (`wait_ready`);
//! - [`queues`]: queues controlled at runtime (pause, resume, scale, start, stop);
//! - [`limits`]: global and rate limits, partitioned or not, across a reopen;
//! - [`cron`]: a crontab checked by `set_crontab`, its fired slots read by `cron_slots`.
//! - [`unique`]: unique inserts, their conflicts, replace and keys across a reopen.
//! - [`metrics`]: outcome counts and duration percentiles per queue and minute.
//! - [`progress`]: a running attempt's progress, stored, kept and refused.
//! - [`processes`]: who works on the store and which jobs each process holds.
//! - [`index_listing`]: listing through the per-state indexes equals the walk.
//! - [`results`]: a job's result kept and read back; waiting for a job to finish.
//! - [`batches`]: batch counts, callbacks inserted once, joining and refusals.

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod index_listing;

mod batches;
mod claimers;
mod claims;
mod counts;
mod cron;
mod limits;
mod listing;
mod metrics;
mod model;
mod outcomes;
mod processes;
mod progress;
mod queues;
mod reads;
mod ready;
mod results;
mod unique;

harness::conformance! {
    model::matches_the_reference_model,
    model::any_job_description_is_refused_or_stored_exactly,
    outcomes::complete_records_when,
    outcomes::fail_retries_at_now_plus_retry_in_then_discards_when_exhausted,
    outcomes::snooze_reschedules_without_using_up_an_attempt,
    outcomes::interrupt_hands_a_job_back_due_at_once_without_using_up_an_attempt,
    outcomes::cancel_and_discard_outcomes_record_their_reasons,
    outcomes::stale_acks_change_no_state,
    outcomes::ack_nowait_is_applied_by_the_next_sync,
    outcomes::retry_makes_finished_jobs_available_and_refuses_executing_ones,
    outcomes::cancel_of_a_finished_job_returns_it_unchanged,
    outcomes::prune_removes_only_old_finished_jobs,
    outcomes::outcomes_survive_reopen,
    claims::claims_by_priority_then_scheduled_time_then_id,
    claims::claim_waits_for_an_insert_from_another_thread,
    claims::claim_times_out_empty_and_ignores_other_queues,
    claims::interrupt_releases_a_waiting_claim,
    claims::close_releases_a_waiting_claim,
    claims::cancelled_available_jobs_are_never_claimed,
    claims::cancels_racing_claims_never_let_a_cancelled_job_run,
    claims::concurrent_claimers_never_get_the_same_job,
    claims::a_job_promoted_and_cancelled_in_one_commit_is_not_left_ready,
    counts::counts_match_the_jobs_through_every_change,
    counts::oldest_available_looks_across_priorities,
    counts::sync_promoting_runs_scheduled_jobs_early,
    reads::list_filters_by_state_queue_worker_limit_and_after,
    reads::unknown_ids_are_job_not_found,
    listing::list_and_count_follow_every_filter_in_both_orders,
    listing::bulk_actions_work_in_chunks_and_delete_spares_unfinished_jobs,
    claimers::claimers_name_the_queues_claimed_from_and_by_whom,
    claimers::a_waiting_claim_shows_as_a_claimer_with_no_idle_time,
    ready::wait_ready_names_the_watched_queues_with_jobs_ready,
    ready::wait_ready_is_woken_by_an_insert_into_any_watched_queue,
    ready::interrupt_of_a_watched_queue_ends_a_wait_ready,
    queues::a_paused_queue_gives_no_claim_until_resumed,
    queues::a_resume_wakes_a_claim_waiting_on_the_paused_queue,
    queues::no_claim_succeeds_once_a_pause_has_returned,
    queues::queue_settings_are_stored_across_a_reopen,
    queues::bad_queue_changes_are_refused_and_store_nothing,
    limits::a_global_limit_caps_jobs_executing_until_one_leaves,
    limits::a_claim_waiting_on_a_full_global_limit_is_woken_by_a_release,
    limits::a_partitioned_limit_holds_per_partition_and_takes_them_in_turn,
    limits::a_rate_limit_allows_n_starts_per_sliding_period,
    limits::limits_and_rate_windows_survive_a_reopen,
    limits::bad_limits_are_refused_and_store_nothing,
    cron::bad_crontabs_are_refused_whole,
    cron::the_owners_fired_slots_are_read_back_with_their_jobs,
    cron::a_stored_slot_is_not_fired_again_after_reopen,
    unique::a_held_key_returns_the_existing_job_flagged,
    unique::duplicates_within_one_insert_resolve_to_the_first,
    unique::only_the_named_states_and_the_period_hold_a_key,
    unique::threads_racing_one_key_store_one_job,
    unique::replace_overwrites_fields_and_moves_the_claim_place,
    unique::keys_survive_a_reopen,
    unique::bad_specs_are_refused_naming_the_value,
    metrics::metrics_count_outcomes_and_duration_percentiles_per_queue_and_minute,
    metrics::metrics_are_kept_across_a_reopen_and_for_24_hours,
    progress::a_running_attempts_latest_progress_is_kept_after_it_ends,
    progress::bad_progress_is_refused_naming_the_value,
    processes::processes_list_who_works_on_the_store_and_who_holds_each_job,
    index_listing::listing_by_index_equals_the_walk_on_random_stores,
    index_listing::newest_failed_of_one_queue_come_from_the_index,
    results::a_returned_value_is_kept_with_the_job_and_goes_with_it,
    results::a_wait_for_a_job_is_woken_when_it_finishes,
    results::a_wait_ends_on_a_cancel_a_deletion_or_its_timeout,
    batches::a_batch_inserts_its_callbacks_once_when_its_last_job_finishes,
    batches::jobs_join_an_open_batch_and_a_finished_one_takes_no_more,
    batches::bad_batches_are_refused_and_store_nothing,
    batches::batch_counts_follow_cancels_and_deletes_and_survive_a_reopen,
    batches::threads_finishing_a_batch_at_once_insert_each_callback_once,
}

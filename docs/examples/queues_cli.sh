# Queues at runtime from the command line (docs/guides/queues.md), against myapp/jobs.py in
# an empty directory, while a worker runs. check_examples.py runs it with `bash -euxo pipefail`.

kathikon worker myapp.jobs:app >worker.out &
pid=$!
for _ in $(seq 300); do kathikon queues --path jobs.redb --json >queues.json 2>/dev/null && break; sleep 0.1; done

# --8<-- [start:cli]
kathikon pause emails --app myapp.jobs:app   # no email starts until resumed
kathikon scale emails 20 --app myapp.jobs:app --json
kathikon queues --app myapp.jobs:app
kathikon resume emails --app myapp.jobs:app
# --8<-- [end:cli]

kathikon queues --app myapp.jobs:app --json >queues.json
python - <<'PY'
import json

queues = {q["queue"]: q for q in json.load(open("queues.json"))}
assert not queues["emails"]["paused"] and queues["emails"]["concurrency"] == 20, queues
PY
kill -TERM "$pid"
wait "$pid"

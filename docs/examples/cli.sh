# The command line (docs/guides/cli.md), run against myapp/jobs.py in an empty directory.
# check_examples.py runs it with `bash -euxo pipefail`, myapp on PYTHONPATH.

python - <<'PY'
from myapp.jobs import app, cleanup, send_email

send_email.insert({"to": "ann@example.com"})
send_email.insert({"to": "bob@example.invalid"})  # fails: retried
cleanup.insert({}, schedule_in=3600)
app.close()
PY

exec 4>&1 >worker.out  # the worker's stdout goes to worker.out
# --8<-- [start:worker]
kathikon worker myapp.jobs:app --queues emails --grace 10 &
# --8<-- [end:worker]
pid=$!
exec >&4 4>&-
# Wait (up to 30 s) until it has run the first job; both were claimed at once.
for _ in $(seq 300); do grep -q "sent to ann@example.com" worker.out && break; sleep 0.1; done
grep -q "sent to ann@example.com" worker.out
# While the worker runs it owns the store; other commands reach it through its socket.
kathikon stats --path jobs.redb --json > stats.json
grep -q '"emails"' stats.json
kill -TERM "$pid"
wait "$pid"  # exits 0 once running jobs have finished

# --8<-- [start:inspect]
kathikon jobs --app myapp.jobs:app
kathikon jobs --path jobs.redb --state retryable --queue emails
kathikon stats --path jobs.redb
kathikon job 2 --path jobs.redb
# --8<-- [end:inspect]
kathikon jobs --app myapp.jobs:app > jobs.txt
grep -Eq '^ *1 +completed +emails +myapp\.jobs\.send_email +1/3 ' jobs.txt
grep -Eq '^ *2 +retryable +emails +myapp\.jobs\.send_email +1/3 .*ValueError: cannot deliver' jobs.txt
grep -Eq '^ *3 +scheduled +default +myapp\.jobs\.cleanup +0/20 ' jobs.txt
kathikon job 2 --path jobs.redb > job.txt
grep -q "error of attempt 1 at" job.txt

# --8<-- [start:manage]
kathikon retry 2 3 --app myapp.jobs:app   # run now (3 was scheduled an hour ahead)
kathikon cancel 2 --path jobs.redb
kathikon prune --path jobs.redb --older-than 7d   # finished more than 7 days ago: none
kathikon prune --path jobs.redb                   # every finished job
# --8<-- [end:manage]

# --8<-- [start:json]
kathikon stats --path jobs.redb --json | python -c '
import json, sys
stats = json.load(sys.stdin)
print({queue: q["states"]["available"] for queue, q in stats["queues"].items()})
'
# --8<-- [end:json]
test "$(kathikon jobs --path jobs.redb --json | python -c 'import json,sys; print([j["state"] for j in json.load(sys.stdin)])')" = "['available']"

# --8<-- [start:insert]
kathikon insert myapp.jobs:app myapp.jobs.send_email --args '{"to": "cy@example.com"}'
kathikon insert myapp.jobs:app myapp.jobs.cleanup --schedule-in 2h --priority 5 --json
# --8<-- [end:insert]
id=$(kathikon insert myapp.jobs:app myapp.jobs.send_email --args '{"to": "di@example.com"}')
test "$(kathikon job "$id" --path jobs.redb --json | python -c 'import json,sys; j=json.load(sys.stdin); print(j["queue"], j["args"]["to"], j["state"])')" = "emails di@example.com available"

# `stats --watch` until Ctrl-C (here SIGINT after 2 s), which ends it with status 0; off a
# terminal, each table follows a line with its time.
timeout --preserve-status -s INT 2 kathikon stats --path jobs.redb --watch 0.5 > watch.txt
grep -Eq '^-- [0-9-]+ [0-9:]+ UTC$' watch.txt
grep -Eq '^emails +0 +2 ' watch.txt

# Errors: one line on stderr; status 1, or 2 for a usage error.
set +e
kathikon job 99 --path jobs.redb 2>err.txt; test $? -eq 1 || exit 1
grep -q "^kathikon: error: no job with id 99" err.txt
kathikon jobs 2>/dev/null; test $? -eq 2 || exit 1
kathikon insert myapp.jobs:app send_email 2>err.txt; test $? -eq 2 || exit 1
grep -q "no worker named 'send_email'; its workers: myapp.jobs.cleanup, myapp.jobs.send_email" err.txt
set -e
test "$(python -m kathikon --version)" = "kathikon, version $(python -c 'import kathikon; print(kathikon.__version__)')"

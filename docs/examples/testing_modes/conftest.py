import os

# Before the app's module is imported: every app made in this process keeps its jobs in
# memory (shop-jobs.redb is neither created nor opened), on a manual clock, and starts no
# workers.
os.environ["KATHIKON_TESTING"] = "manual"

import kathikon.testing  # noqa: E402
import shop_app  # noqa: E402

# The kathikon_app fixture now yields shop_app.app, with an empty store for each test.
kathikon.testing.use(shop_app.app)

"""Sites: named places that hold data (a hospital, a branch). A site's datasets stay in its own
storage; the central service keeps their metadata and hashes, and federated steps train on them
through the site's own worker (compresso worker --site NAME)."""

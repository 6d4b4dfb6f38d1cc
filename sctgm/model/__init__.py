"""Models: the registry (:mod:`.registry`), the cache and installs (:mod:`.install`), downloads
(:mod:`.download`), weight files (:mod:`.weights`) and the published network's layout (:mod:`.architecture`)."""

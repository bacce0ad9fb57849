"""The platform's extension that runs inside Label Studio (its own process and Python).

Label Studio's community edition has one role and puts every signed-up user into its first
organization, where every member can read every project, annotation, user and webhook.
Organizations are the only boundary it enforces on every endpoint, but it has no API to
create one.  This app adds the few things the platform needs to use that boundary:

* ``POST /cxr-bridge/workspaces/`` (authenticated by the bridge secret, a credential only the
  platform holds) creates one organization per platform workspace, owned by a service user
  whose legacy token the platform acts with, and one reader user who can log in only through
  the platform (unusable password);
* ``GET /cxr-bridge/sso/?t=...`` signs a reader user in from a short-lived, single-use,
  HMAC-signed ticket the platform issues to the authenticated radiologist, and sends them
  to their workspace;
* guards on Label Studio's own models so that no member can switch their active organization
  to one they do not belong to, or remove the owner's membership.

It imports only Django and Label Studio; it never imports the platform.
"""

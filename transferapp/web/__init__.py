"""Views, forms and CSP: thin, the access check first, the work done by the domain packages."""

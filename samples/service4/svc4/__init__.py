"""service4: an HTML WSGI app in a package; uWSGI loads ``module = svc4.web``."""

-- The bundle a request is a part of (`request::BundleRef`), as JSON: the
-- config's bundle name, if any, and every part's id in order (the first
-- is the bundle's). NULL for a request asked for alone.
ALTER TABLE requests ADD COLUMN bundle TEXT;

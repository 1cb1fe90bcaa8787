-- Request lists filter by visibility and by whose approval a request waits
-- for in the query, so a page is full whenever more matching rows exist.
-- Who may approve (the groups of every tier) and who approved are JSON
-- columns; these are the same facts as `|a|b|` lists of ids (ids hold no
-- `|`), written with the row in the same upsert, so that "is `x` one of
-- them" is an exact substring match on both databases (`|x|`). Empty when
-- there are none.
ALTER TABLE requests ADD COLUMN approver_group_list TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN approved_by_list TEXT NOT NULL DEFAULT '';
-- Pages follow (created_at, id) downwards; ties on created_at are broken by id.
DROP INDEX requests_by_created;
CREATE INDEX requests_by_created ON requests (created_at, id);

-- Room on each page for the claim's new row version next to the old one
-- (a heap-only update needs it on the same page).
ALTER TABLE requests SET (fillfactor = 80);

-- Existing rows: the lists from their JSON columns.
UPDATE requests SET
    approver_group_list = COALESCE(
        (SELECT '|' || string_agg(g, '|') || '|' FROM json_array_elements_text(approver_groups::json) AS g), ''),
    approved_by_list = COALESCE(
        (SELECT '|' || string_agg(a ->> 'approver', '|') || '|' FROM json_array_elements(approvals::json) AS a), '');

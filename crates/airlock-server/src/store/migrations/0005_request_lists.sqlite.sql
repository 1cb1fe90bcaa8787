-- Existing rows: the lists from their JSON columns.
UPDATE requests SET
    approver_group_list = COALESCE(
        (SELECT '|' || group_concat(value, '|') || '|' FROM json_each(requests.approver_groups)), ''),
    approved_by_list = COALESCE(
        (SELECT '|' || group_concat(json_extract(value, '$.approver'), '|') || '|'
         FROM json_each(requests.approvals)), '');

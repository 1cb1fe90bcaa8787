-- The requests pending as the table arrives.
INSERT INTO pending_approver_groups (request_id, approver_group, created_at)
    SELECT DISTINCT requests.id, g.value, requests.created_at
    FROM requests, json_each(requests.approver_groups) AS g
    WHERE requests.state = 'pending';

-- The requests pending as the table arrives.
INSERT INTO pending_approver_groups (request_id, approver_group, created_at)
    SELECT DISTINCT requests.id, g, requests.created_at
    FROM requests, json_array_elements_text(requests.approver_groups::json) AS g
    WHERE requests.state = 'pending';

-- A route without modules = ["greet"]: greet is not there.
return {
  on_open = function(conn)
    conn:send("greet is " .. type(greet))
  end,
  on_message = function(conn, msg)
    conn:send(msg)
  end,
}

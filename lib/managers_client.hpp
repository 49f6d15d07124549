// Internal: the client side of the managers (CPython: managers.py BaseProxy and its _tls
// connections): one authenticated mp::Connection per thread, address and authkey.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "managers_wire.hpp"
#include "mp/connection.hpp"
#include "mp/managers.hpp"

namespace mp::managers::detail {

// The connection layer's address for a manager's address (std::invalid_argument for a TCP port
// out of range).
connection::Address connection_address(const Address& address);

// One request/response over this thread's connection to `address` (opened and authenticated on
// first use: connection::Client). Throws std::length_error for a request over the frame cap
// (nothing sent), EOFError when the server is gone, and what the response carries.
std::string request(const Address& address, const std::string& authkey, Op op, std::uint64_t id,
                    std::string_view name = {}, std::string_view args = {});

// Closes this thread's connections to `address` and makes every thread's cached connections
// stale (a manager shut its server down: the address may be served again by another server).
void forget_server(const Address& address);
// In a forked server: closes the owner's client connections copied by fork, so those servers
// see EOF when the owner's copies close.
void drop_inherited_connections();

struct ProxyAccess {
  // A proxy of object `id`, whose reference the caller already holds (create).
  static BaseProxy adopt(Address address, std::string authkey, std::uint64_t id,
                         std::string type_id);
};

}  // namespace mp::managers::detail

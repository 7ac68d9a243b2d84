// The README's C++ block as a complete program: its lines, in order, with what makes them a
// program around them (check_readme.py checks that the README still shows exactly these lines).
// CTest runs it: the exit code says whether the README's promises held.
#include <chrono>
#include <cstdio>
#include <system_error>
#include <thread>

#include <boost/asio/use_future.hpp>                      // use_future: a std::future of the completion's values
#include <macula/publisher.hpp>
#include <macula/rpc_client.hpp>
#include <macula/subscriber.hpp>
#include <macula/testing/local_mesh.hpp>

int main() {
macula::testing::LocalMesh mesh({.size = 2});            // two linked nodes on loopback
macula::Subscriber sub(mesh[1], "sensors.#.temp", [](const macula::Message& m) {
  std::printf("%.*s: %s\n", int(m.topic().size()), m.topic().data(), m.payload_string().c_str());
});                                                      // called on a worker thread
auto add = mesh[1].advertise("math.add", macula::sync_handler([](const macula::Bytes& a) {
  return macula::Bytes{static_cast<std::uint8_t>(a.at(0) + a.at(1))};
}));
mesh.settle();                                           // announcements crossed the link

macula::Publisher pub(mesh[0]);
pub.publish("sensors.kitchen.temp", macula::Bytes{'2', '1'});  // QoS 0, returns at once
auto acked = pub.async_publish("sensors.hall.temp", {'1', '9'}, macula::Qos::at_least_once, boost::asio::use_future);
std::error_code delivered = acked.get();                 // QoS 1: the subscriber's node has it
macula::RpcClient rpc(mesh[0]);
rpc.async_call("math.add", {2, 3}, [](std::error_code ec, macula::Bytes r) {
  if (!ec) std::printf("2 + 3 = %d\n", r.at(0));          // or ec: no_provider, timed_out, ...
});
  // What the README promises: the QoS 1 publish was delivered, the call answers 5.
  std::error_code ec;
  const macula::Bytes sum = rpc.call("math.add", {2, 3}, ec);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the async call's line print
  return delivered || ec || sum != macula::Bytes{5} ? 1 : 0;
}

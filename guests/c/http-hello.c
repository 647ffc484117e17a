/*
 * http-hello: the smallest useful wasi:http/proxy component, Wisp's benchmark
 * guest. Every request gets 200, content-type: text/plain, "hello from wisp\n".
 * Bindings: wit-bindgen c, world wisp:guests/http-hello (guests/wit).
 */
#include "http_hello.h"

#define LIT(s) {(uint8_t *)(s), sizeof(s) - 1}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
    wasi_http_types_incoming_request_drop_own(request);

    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    wasi_http_types_field_name_t name = LIT("content-type");
    wasi_http_types_field_value_t value = LIT("text/plain");
    wasi_http_types_header_error_t herr;
    wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(headers), &name, &value, &herr);

    /* The response takes the headers; its status defaults to 200. */
    wasi_http_types_own_outgoing_response_t response =
        wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_own_outgoing_body_t body;
    wasi_http_types_method_outgoing_response_body(
        wasi_http_types_borrow_outgoing_response(response), &body);

    wasi_http_types_result_own_outgoing_response_error_code_t result = {
        .is_err = false, .val = {.ok = response}};
    wasi_http_types_static_response_outparam_set(response_out, &result);

    wasi_http_types_own_output_stream_t out;
    if (wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &out)) {
        http_hello_list_u8_t bytes = LIT("hello from wisp\n");
        wasi_io_streams_stream_error_t serr;
        wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(out), &bytes, &serr);
        wasi_io_streams_output_stream_drop_own(out);
    }
    wasi_http_types_error_code_t ecode;
    wasi_http_types_static_outgoing_body_finish(body, NULL, &ecode);
}

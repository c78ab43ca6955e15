// One stream to NO consumers (a tensor read by several layers: a residual block's branch and
// skip, a concatenation's branches). Every output offers the input beat until it takes it; a
// flag per output remembers that it has, so a consumer that took the beat is not offered it
// twice while a slower one is still waiting. The input beat is consumed in the cycle the last
// output takes its copy. No register on the data path: in_ready is the AND of what the outputs
// still owe, so a flipq_fifo (whose in_ready depends on its fill count only) behind each output
// keeps the ready chain short.
`default_nettype none

module flipq_fork #(
    parameter integer W = 8,
    parameter integer NO = 2
) (
    input  wire            clk,
    input  wire            rst,
    input  wire [W-1:0]    in_data,
    input  wire            in_valid,
    output wire            in_ready,
    output wire [NO*W-1:0] out_data,
    output wire [NO-1:0]   out_valid,
    input  wire [NO-1:0]   out_ready
);
    reg  [NO-1:0] done;  // outputs that have taken the current beat
    wire [NO-1:0] fire = out_valid & out_ready;
    wire all_taken = &(done | fire);

    assign out_valid = {NO{in_valid}} & ~done;
    assign out_data = {NO{in_data}};
    assign in_ready = all_taken;

    always @(posedge clk) begin
        if (rst) done <= {NO{1'b0}};
        else if (in_valid) done <= all_taken ? {NO{1'b0}} : (done | fire);
    end
endmodule

`default_nettype wire

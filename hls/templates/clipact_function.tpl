nnet::clipact<${input_t}, ${output_t}, clipact_config${index}>(${input}, ${output});
